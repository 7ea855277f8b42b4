variable "name" {
  description = "The region's name in the topology."
  type        = string
}

variable "cluster_name" {
  type = string
}

variable "cloud_region" {
  description = "The GCP region the nodes go to (the topology region's `cloud_region` tag, else its name)."
  type        = string
}

variable "zones" {
  description = "The zones nodes are spread over, round robin by node id; empty: every zone of the region that is up."
  type        = list(string)
}

variable "network" {
  description = "The VPC network (global) the region's subnet belongs to."
  type        = string
}

variable "network_tag" {
  description = "The tag the firewall rules target."
  type        = string
}

variable "subnet_cidr" {
  description = "The region's subnet: the /24 holding every node's address (rendered)."
  type        = string
  default     = null

  validation {
    condition     = var.subnet_cidr != null
    error_message = "This region's nodes have no common IPv4 /24 in the topology: give every node of the region an IPv4 address in one /24 (the subnet the region gets)."
  }
}

variable "nodes" {
  description = "The region's nodes as rendered: id => address, private IP, ports, roles, node.toml and unit."
  type = map(object({
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

  validation {
    condition     = alltrue([for n in values(var.nodes) : n.private_ip != null])
    error_message = "Every node needs an IPv4 address in the topology (its private IP here)."
  }

  validation {
    condition     = alltrue([for n in values(var.nodes) : n.private_ip == null || !contains(["0", "1", "254", "255"], element(split(".", coalesce(n.private_ip, "0.0.0.0")), 3))])
    error_message = "GCP reserves .0, .1, .254 and .255 of a /24 subnet: give the region's nodes other addresses in the topology (e.g. .11, .12, .13)."
  }
}

variable "topology_toml" {
  type = string
}

variable "config_root" {
  type = string
}

variable "data_root" {
  type = string
}

variable "meridian_binary" {
  type = string
}

variable "user" {
  type = string
}

variable "machine_type" {
  type = string
}

variable "image" {
  type = string
}

variable "boot_disk_size_gb" {
  type = number
}

variable "data_disk_size_gb" {
  type = number
}

variable "data_disk_type" {
  type = string
}

variable "download_url" {
  description = "Where cloud-init fetches the meridian binary; empty: the image has it."
  type        = string
}

variable "tls_files" {
  type = map(object({
    ca   = string
    cert = string
    key  = string
  }))
  sensitive = true
}

variable "dns_zone" {
  description = "The private managed zone's name."
  type        = string
}

variable "dns_name" {
  description = "The private managed zone's domain (ends with a dot)."
  type        = string
}
