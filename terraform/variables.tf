# What `meridian topology render TOPOLOGY --out DIR` writes into DIR/terraform.tfvars.json:
# pass it with `-var-file=DIR/terraform.tfvars.json`.

variable "cluster_name" {
  description = "The topology's name (rendered)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,30}[a-z0-9])?$", var.cluster_name))
    error_message = "GCP names resources and DNS after the topology's name: lowercase letters, digits and '-', starting with a letter, at most 32."
  }
}

variable "config_root" {
  description = "Where the rendered files are installed on each machine (rendered)."
  type        = string
}

variable "data_root" {
  description = "Under which each node keeps its data, DATA_ROOT/node-ID (rendered)."
  type        = string
}

variable "meridian_binary" {
  description = "Where the meridian binary is on each machine (rendered)."
  type        = string
}

variable "user" {
  description = "The system user nodes run as (rendered)."
  type        = string
}

variable "topology_toml" {
  description = "The topology file, installed on every node (rendered)."
  type        = string
}

variable "regions" {
  description = "Regions with their nodes, roles and rendered files (rendered)."
  type = map(object({
    cloud_region = optional(string)
    subnet_cidr  = optional(string)
    tags         = map(string)
    nodes = map(object({
      address     = string
      private_ip  = optional(string)
      port        = number
      http_port   = number
      roles       = map(string)
      config_path = string
      node_toml   = string
      unit_name   = string
      unit        = string
    }))
  }))

  validation {
    condition     = alltrue([for name in keys(var.regions) : can(regex("^[a-z]([-a-z0-9]{0,18}[a-z0-9])?$", name))])
    error_message = "GCP names resources and DNS after each region: lowercase letters, digits and '-', starting with a letter, at most 20."
  }
}

# The operator's choices.

variable "project" {
  description = "The GCP project to deploy into."
  type        = string
}

variable "machine_type" {
  description = "Instance size of every node."
  type        = string
  default     = "n2-standard-4"
}

variable "image" {
  description = "Boot image (one with cloud-init, e.g. ubuntu-os-cloud/ubuntu-2404-lts-amd64)."
  type        = string
  default     = "ubuntu-os-cloud/ubuntu-2404-lts-amd64"
}

variable "boot_disk_size_gb" {
  description = "Boot disk size."
  type        = number
  default     = 20
}

variable "data_disk_size_gb" {
  description = "The data disk each node keeps its log and state on (mounted at data_root/node-ID)."
  type        = number
  default     = 100
}

variable "data_disk_type" {
  description = "The data disk's type: Meridian fsyncs every batch, so an SSD."
  type        = string
  default     = "pd-ssd"
}

variable "zones" {
  description = "Per GCP region, the zones its nodes are spread over (round robin by node id); a region not listed uses every zone GCP reports up."
  type        = map(list(string))
  default     = {}
}

variable "meridian_download_url" {
  description = "Where cloud-init fetches the meridian binary from; empty: the image has it at meridian_binary."
  type        = string
  default     = ""
}

variable "client_cidrs" {
  description = "Source ranges of clients (SDK, CLI) allowed to reach the gRPC port."
  type        = list(string)
  default     = []
}

variable "operator_cidrs" {
  description = "Source ranges allowed to reach the HTTP listener (metrics, health, status page, gateway)."
  type        = list(string)
  default     = []
}

variable "dns_domain" {
  description = "The private DNS zone's domain: each region's endpoint is REGION.CLUSTER.DOMAIN."
  type        = string
  default     = "meridian.internal."

  validation {
    condition     = endswith(var.dns_domain, ".")
    error_message = "dns_domain must end with a dot, e.g. \"meridian.internal.\"."
  }
}

variable "tls_files" {
  description = "Per node id: the PEM texts cloud-init installs under config_root/tls (ca, cert, key). Empty: provide them another way (docs/deploy.md)."
  type = map(object({
    ca   = string
    cert = string
    key  = string
  }))
  default   = {}
  sensitive = true
}
