# IAM role for the platform's pods through IRSA: the Kubernetes ServiceAccount below carries
# the role ARN, and only that ServiceAccount in var.namespace may assume it.

data "aws_iam_openid_connect_provider" "eks" {
  url = data.aws_eks_cluster.this.identity[0].oidc[0].issuer
}

data "aws_iam_policy_document" "assume_from_service_account" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [data.aws_iam_openid_connect_provider.eks.arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${local.service_account}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "platform" {
  name               = "${local.name}-platform"
  assume_role_policy = data.aws_iam_policy_document.assume_from_service_account.json
}

# Publish, consume, dead-letter, and the readiness check: nothing else (no CreateQueue,
# CreateTopic or Subscribe: Terraform owns those, and the pods run with auto-create off).
data "aws_iam_policy_document" "queue_access" {
  statement {
    sid       = "Publish"
    actions   = ["sns:Publish"]
    resources = [for t in aws_sns_topic.topic : t.arn]
  }

  statement {
    sid = "Consume"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueUrl",
      "sqs:GetQueueAttributes",
      "sqs:SendMessage",
    ]
    resources = concat([for q in aws_sqs_queue.queue : q.arn], [for q in aws_sqs_queue.dlq : q.arn])
  }

  # /readyz pings SQS with ListQueues, an account-level action that takes no queue ARN.
  statement {
    sid       = "Ping"
    actions   = ["sqs:ListQueues"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "queue_access" {
  name   = "queue-access"
  role   = aws_iam_role.platform.id
  policy = data.aws_iam_policy_document.queue_access.json
}
