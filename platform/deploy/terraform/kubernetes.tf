# What the chart expects to exist before it is installed: its namespace, the Secret with the
# database URL (the migrate hook reads it before anything else of the release exists), and
# the ServiceAccount bound to the IAM role.

resource "kubernetes_namespace_v1" "ofsre" {
  metadata {
    name = var.namespace
    labels = {
      # Pod Security Admission: the chart's pods meet the `restricted` profile.
      "pod-security.kubernetes.io/enforce" = "restricted"
    }
  }
}

resource "kubernetes_secret_v1" "database" {
  metadata {
    name      = "ofsre-database"
    namespace = kubernetes_namespace_v1.ofsre.metadata[0].name
  }

  data = {
    # SQLAlchemy async URL; asyncpg negotiates TLS, which rds.force_ssl requires.
    url = "postgresql+asyncpg://${aws_db_instance.ofsre.username}:${random_password.db.result}@${aws_db_instance.ofsre.address}:${aws_db_instance.ofsre.port}/${aws_db_instance.ofsre.db_name}?ssl=require"
  }
}

resource "kubernetes_service_account_v1" "platform" {
  metadata {
    name      = local.service_account
    namespace = kubernetes_namespace_v1.ofsre.metadata[0].name
    annotations = {
      "eks.amazonaws.com/role-arn" = aws_iam_role.platform.arn
    }
  }

  # The pods set automountServiceAccountToken: false; IRSA projects its own web-identity token.
  automount_service_account_token = false
}
