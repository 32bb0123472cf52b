# Provider and Terraform version constraints. This configuration is NOT applied from this
# repository's CI: tests/platform/deploy parses it (python-hcl2) and checks its consistency.
terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.80"
    }
    # 2.x: providers.tf configures it with a `kubernetes { }` block, an attribute in 3.x.
    helm = {
      source  = "hashicorp/helm"
      version = "~> 2.17"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.35"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}
