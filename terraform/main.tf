# Meridian across GCP regions, from `meridian topology render` (terraform/README.md).
# One VPC network spans every region (GCP networks are global); each region's module places
# its subnet, nodes and endpoint name.

provider "google" {
  project = var.project
}

locals {
  network_tag = "meridian-${var.cluster_name}"
  subnets     = [for r in values(var.regions) : r.subnet_cidr if r.subnet_cidr != null]
  ports       = distinct(flatten([for r in values(var.regions) : [for n in values(r.nodes) : tostring(n.port)]]))
  http_ports  = distinct(flatten([for r in values(var.regions) : [for n in values(r.nodes) : tostring(n.http_port)]]))
}

resource "google_compute_network" "meridian" {
  name                    = local.network_tag
  auto_create_subnetworks = false
}

# Raft, forwarding and read-index syncs between nodes of every region.
resource "google_compute_firewall" "peers" {
  name          = "${local.network_tag}-peers"
  network       = google_compute_network.meridian.id
  source_ranges = local.subnets
  target_tags   = [local.network_tag]

  allow {
    protocol = "tcp"
    ports    = local.ports
  }
}

resource "google_compute_firewall" "clients" {
  count         = length(var.client_cidrs) > 0 ? 1 : 0
  name          = "${local.network_tag}-clients"
  network       = google_compute_network.meridian.id
  source_ranges = var.client_cidrs
  target_tags   = [local.network_tag]

  allow {
    protocol = "tcp"
    ports    = local.ports
  }
}

resource "google_compute_firewall" "operators" {
  count         = length(var.operator_cidrs) > 0 ? 1 : 0
  name          = "${local.network_tag}-operators"
  network       = google_compute_network.meridian.id
  source_ranges = var.operator_cidrs
  target_tags   = [local.network_tag]

  allow {
    protocol = "tcp"
    ports    = local.http_ports
  }
}

resource "google_dns_managed_zone" "meridian" {
  name       = local.network_tag
  dns_name   = "${var.cluster_name}.${var.dns_domain}"
  visibility = "private"

  private_visibility_config {
    networks {
      network_url = google_compute_network.meridian.id
    }
  }
}

module "region" {
  source   = "./modules/region"
  for_each = var.regions

  name              = each.key
  cluster_name      = var.cluster_name
  cloud_region      = coalesce(each.value.cloud_region, each.key)
  zones             = lookup(var.zones, coalesce(each.value.cloud_region, each.key), [])
  network           = google_compute_network.meridian.id
  network_tag       = local.network_tag
  subnet_cidr       = each.value.subnet_cidr
  nodes             = each.value.nodes
  topology_toml     = var.topology_toml
  config_root       = var.config_root
  data_root         = var.data_root
  meridian_binary   = var.meridian_binary
  user              = var.user
  machine_type      = var.machine_type
  image             = var.image
  boot_disk_size_gb = var.boot_disk_size_gb
  data_disk_size_gb = var.data_disk_size_gb
  data_disk_type    = var.data_disk_type
  download_url      = var.meridian_download_url
  tls_files         = var.tls_files
  dns_zone          = google_dns_managed_zone.meridian.name
  dns_name          = google_dns_managed_zone.meridian.dns_name
}
