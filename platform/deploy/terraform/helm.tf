# The monitoring stack first (it installs the ServiceMonitor CRD), then the platform chart.

resource "helm_release" "kube_prometheus_stack" {
  name             = "kube-prometheus-stack"
  repository       = "https://prometheus-community.github.io/helm-charts"
  chart            = "kube-prometheus-stack"
  version          = var.kube_prometheus_stack_version
  namespace        = var.monitoring_namespace
  create_namespace = true
  atomic           = true
  timeout          = 900

  values = [yamlencode({
    prometheus = {
      prometheusSpec = {
        # Pick up ServiceMonitors of every release, not only those labelled for this one.
        serviceMonitorSelectorNilUsesHelmValues = false
        ruleSelectorNilUsesHelmValues           = false
        retention                               = "15d"
      }
    }
  })]
}

resource "helm_release" "ofsre_platform" {
  name      = "ofsre"
  chart     = "${path.module}/../helm/ofsre-platform"
  namespace = kubernetes_namespace_v1.ofsre.metadata[0].name
  atomic    = true # a failed migrate hook or rollout rolls the release back
  wait      = true
  timeout   = 900

  values = [yamlencode({
    image              = { repository = var.image_repository, tag = var.image_tag }
    environment        = var.environment
    serviceAccountName = kubernetes_service_account_v1.platform.metadata[0].name
    database = {
      existingSecret = kubernetes_secret_v1.database.metadata[0].name
      secretKey      = "url"
    }
    queue = {
      backend = "sqs"
      settings = {
        sqs = {
          OFSRE_QUEUE_REGION        = var.region
          OFSRE_QUEUE_NAME_PREFIX   = var.name_prefix
          OFSRE_QUEUE_SNS_TOPIC_ARN = local.sns_topic_arn_template
          OFSRE_QUEUE_AUTO_CREATE   = "false"
          OFSRE_QUEUE_LEASE_SECONDS = tostring(var.queue_visibility_timeout_seconds)
        }
      }
    }
    logShipper = {
      type = var.log_shipper
      # Only the chosen shipper's settings; none has no settings.
      settings = { for s in [var.log_shipper] : s => var.log_shipper_settings if s != "none" }
    }
    otel = { endpoint = var.otel_endpoint }
    serviceMonitor = {
      enabled = true
      labels  = { release = helm_release.kube_prometheus_stack.name }
    }
    # Only the gateway reaches the modules; the gateway admits the ingress, every module the
    # Prometheus of the stack above (its pods: app.kubernetes.io/name=prometheus).
    networkPolicy = {
      enabled = true
      gateway = { from = var.gateway_ingress_from }
      prometheus = {
        from = [{
          namespaceSelector = { matchLabels = { "kubernetes.io/metadata.name" = var.monitoring_namespace } }
          podSelector       = { matchLabels = { "app.kubernetes.io/name" = "prometheus" } }
        }]
      }
    }
  })]

  depends_on = [helm_release.kube_prometheus_stack]
}
