# The EKS cluster already exists (var.cluster_name); Terraform only reads it to reach its API.

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, { "app.kubernetes.io/part-of" = "ofsre" })
  }
}

data "aws_eks_cluster" "this" {
  name = var.cluster_name
}

# A short-lived token for the kubernetes and helm providers (no kubeconfig on disk).
data "aws_eks_cluster_auth" "this" {
  name = var.cluster_name
}

provider "kubernetes" {
  host                   = data.aws_eks_cluster.this.endpoint
  cluster_ca_certificate = base64decode(data.aws_eks_cluster.this.certificate_authority[0].data)
  token                  = data.aws_eks_cluster_auth.this.token
}

provider "helm" {
  kubernetes {
    host                   = data.aws_eks_cluster.this.endpoint
    cluster_ca_certificate = base64decode(data.aws_eks_cluster.this.certificate_authority[0].data)
    token                  = data.aws_eks_cluster_auth.this.token
  }
}
