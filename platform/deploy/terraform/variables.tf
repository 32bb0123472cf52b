variable "region" {
  description = "AWS region of the cluster, the database and the queues."
  type        = string
  default     = "sa-east-1"
}

variable "cluster_name" {
  description = "Name of the existing EKS cluster the platform runs on."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of every AWS resource name, and of the SQS queue names (OFSRE_QUEUE_NAME_PREFIX)."
  type        = string
  default     = "ofsre-"
}

variable "namespace" {
  description = "Kubernetes namespace of the ofsre-platform release."
  type        = string
  default     = "ofsre"
}

variable "monitoring_namespace" {
  description = "Kubernetes namespace of kube-prometheus-stack."
  type        = string
  default     = "monitoring"
}

variable "gateway_ingress_from" {
  description = "NetworkPolicyPeers admitted to the gateway (the chart's networkPolicy.gateway.from): the ingress controller's namespace, or with the AWS Load Balancer Controller in IP mode the load balancer's subnets as ipBlocks. The VPC CNI enforces NetworkPolicy only with its network policy agent enabled."
  type        = any
  default     = [{
    namespaceSelector = { matchLabels = { "kubernetes.io/metadata.name" = "ingress-nginx" } }
  }]
}

variable "db_subnet_ids" {
  description = "Private subnets (two or more availability zones) for the RDS instance."
  type        = list(string)

  validation {
    condition     = length(var.db_subnet_ids) >= 2
    error_message = "RDS needs subnets in at least two availability zones."
  }
}

variable "db_instance_class" {
  description = "RDS instance class. db.m6g.large (8 GiB) allows about 900 connections: the chart's 400 at full scale plus room for a rolling update's surge."
  type        = string
  default     = "db.m6g.large"
}

variable "db_engine_version" {
  description = "PostgreSQL major version."
  type        = string
  default     = "16"
}

variable "db_allocated_storage_gb" {
  description = "Initial storage; autoscaling may grow it up to db_max_allocated_storage_gb."
  type        = number
  default     = 50
}

variable "db_max_allocated_storage_gb" {
  description = "Upper bound of RDS storage autoscaling."
  type        = number
  default     = 200
}

variable "db_multi_az" {
  description = "A standby in a second availability zone (automatic failover)."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery window)."
  type        = number
  default     = 7
}

variable "db_deletion_protection" {
  description = "Refuse to delete the database; turn off explicitly before a destroy."
  type        = bool
  default     = true
}

variable "queue_topics" {
  description = "Queue topics the platform publishes to; each gets an SNS topic, an SQS queue and a DLQ."
  type        = list(string)
  default     = ["pix-payments"]
}

variable "queue_max_receive_count" {
  description = "SQS redrive: receives before SQS itself moves a message to the DLQ. OFSRE_QUEUE_MAX_ATTEMPTS (5) + 1, as the adapter declares when it creates a queue: the app dead-letters first, with the reason, and SQS is the backstop."
  type        = number
  default     = 6
}

variable "queue_visibility_timeout_seconds" {
  description = "SQS visibility timeout; keep it equal to the app's OFSRE_QUEUE_LEASE_SECONDS."
  type        = number
  default     = 30
}

variable "queue_retention_seconds" {
  description = "How long SQS keeps an unconsumed message (the DLQ keeps messages 14 days)."
  type        = number
  default     = 345600
}

variable "image_repository" {
  description = "Container image of ofsre (with the platform, sqs and shipper extras installed)."
  type        = string
}

variable "image_tag" {
  description = "Image tag; empty: the chart's appVersion."
  type        = string
  default     = ""
}

variable "environment" {
  description = "Deployment environment name (OFSRE_ENV)."
  type        = string
  default     = "production"
}

variable "otel_endpoint" {
  description = "OTLP/HTTP endpoint for traces (OTEL_EXPORTER_OTLP_ENDPOINT); empty: no export."
  type        = string
  default     = ""
}

variable "log_shipper" {
  description = "OFSRE_LOG_SHIPPER: none, loki, datadog or elastic."
  type        = string
  default     = "none"

  validation {
    condition     = contains(["none", "loki", "datadog", "elastic"], var.log_shipper)
    error_message = "log_shipper must be none, loki, datadog or elastic."
  }
}

variable "log_shipper_settings" {
  description = "Plain settings of the chosen log shipper (environment variable name => value)."
  type        = map(string)
  default     = {}
}

variable "kube_prometheus_stack_version" {
  description = "Version of the prometheus-community kube-prometheus-stack chart."
  type        = string
  default     = "65.1.1"
}

variable "tags" {
  description = "Tags added to every AWS resource."
  type        = map(string)
  default     = {}
}
