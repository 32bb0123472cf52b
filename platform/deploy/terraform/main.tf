# ofsre on AWS: RDS PostgreSQL, SNS + SQS (+ DLQ) per queue topic, an IAM role for the pods
# (IRSA), kube-prometheus-stack, and the ofsre-platform chart from ../helm. The EKS cluster
# is assumed to exist. NOT applied from this repository: see ../README.md.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  name            = trimsuffix(var.name_prefix, "-")
  service_account = "ofsre-platform"
  # OFSRE_QUEUE_SNS_TOPIC_ARN: the adapter replaces {topic} (literal braces, not HCL) with the
  # prefixed name, name_prefix + topic, which is how queue.tf names the SNS topics.
  sns_topic_arn_template = "arn:${data.aws_partition.current.partition}:sns:${var.region}:${data.aws_caller_identity.current.account_id}:{topic}"
  oidc_issuer            = replace(data.aws_eks_cluster.this.identity[0].oidc[0].issuer, "https://", "")
}
