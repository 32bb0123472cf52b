# Per queue topic: an SNS topic the services publish to, an SQS queue subscribed to it that
# the worker consumes, and a dead-letter queue. The names follow the adapter's convention
# (OFSRE_QUEUE_NAME_PREFIX + topic); the pods run with OFSRE_QUEUE_AUTO_CREATE=false, so
# they never need permission to create anything.

resource "aws_sqs_queue" "dlq" {
  for_each = toset(var.queue_topics)

  name                      = "${var.name_prefix}${each.key}-dlq"
  message_retention_seconds = 1209600 # 14 days, the SQS maximum: time to inspect and redrive
  sqs_managed_sse_enabled   = true
}

resource "aws_sqs_queue" "queue" {
  for_each = toset(var.queue_topics)

  name                       = "${var.name_prefix}${each.key}"
  visibility_timeout_seconds = var.queue_visibility_timeout_seconds
  message_retention_seconds  = var.queue_retention_seconds
  receive_wait_time_seconds  = 20 # long polling: fewer empty receives
  sqs_managed_sse_enabled    = true

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq[each.key].arn
    maxReceiveCount     = var.queue_max_receive_count
  })
}

resource "aws_sqs_queue_redrive_allow_policy" "dlq" {
  for_each  = toset(var.queue_topics)
  queue_url = aws_sqs_queue.dlq[each.key].id

  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.queue[each.key].arn]
  })
}

resource "aws_sns_topic" "topic" {
  for_each = toset(var.queue_topics)

  name              = "${var.name_prefix}${each.key}"
  kms_master_key_id = "alias/aws/sns"
}

resource "aws_sns_topic_subscription" "queue" {
  for_each = toset(var.queue_topics)

  topic_arn = aws_sns_topic.topic[each.key].arn
  protocol  = "sqs"
  endpoint  = aws_sqs_queue.queue[each.key].arn
  # The body arrives as published (no SNS envelope); message attributes carry the trace context.
  raw_message_delivery = true
}

# SNS may deliver to the queue, and only from its own topic.
data "aws_iam_policy_document" "queue_from_topic" {
  for_each = toset(var.queue_topics)

  statement {
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.queue[each.key].arn]

    principals {
      type        = "Service"
      identifiers = ["sns.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_sns_topic.topic[each.key].arn]
    }
  }
}

resource "aws_sqs_queue_policy" "queue" {
  for_each  = toset(var.queue_topics)
  queue_url = aws_sqs_queue.queue[each.key].id
  policy    = data.aws_iam_policy_document.queue_from_topic[each.key].json
}
