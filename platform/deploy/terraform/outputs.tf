output "database_endpoint" {
  description = "RDS PostgreSQL address:port."
  value       = aws_db_instance.ofsre.endpoint
}

output "database_secret" {
  description = "Kubernetes Secret holding OFSRE_DATABASE_URL (key `url`)."
  value       = "${kubernetes_secret_v1.database.metadata[0].namespace}/${kubernetes_secret_v1.database.metadata[0].name}"
}

output "queue_urls" {
  description = "SQS queue URL per topic."
  value       = { for topic, q in aws_sqs_queue.queue : topic => q.url }
}

output "dead_letter_queue_urls" {
  description = "SQS dead-letter queue URL per topic."
  value       = { for topic, q in aws_sqs_queue.dlq : topic => q.url }
}

output "sns_topic_arns" {
  description = "SNS topic ARN per topic."
  value       = { for topic, t in aws_sns_topic.topic : topic => t.arn }
}

output "platform_role_arn" {
  description = "IAM role the platform's pods assume (IRSA)."
  value       = aws_iam_role.platform.arn
}

output "namespace" {
  description = "Namespace of the ofsre-platform release."
  value       = helm_release.ofsre_platform.namespace
}
