# One region of a Meridian cluster on GCP: its subnet, a VM and a data disk per node (each at
# the private IP the topology gives it, configured by cloud-init with its rendered node.toml
# and systemd unit), and REGION.<zone> naming every node of the region.

data "google_compute_zones" "up" {
  region = var.cloud_region
  status = "UP"
}

locals {
  zones = length(var.zones) > 0 ? var.zones : sort(data.google_compute_zones.up.names)
  # Node ids in order, each in the next zone: a zone's loss takes at most a share of the
  # region's voters.
  ids  = sort([for id in keys(var.nodes) : format("%020d", tonumber(id))])
  zone = { for i, padded in local.ids : tostring(tonumber(padded)) => local.zones[i % length(local.zones)] }
}

resource "google_compute_subnetwork" "region" {
  name          = "${var.network_tag}-${var.name}"
  region        = var.cloud_region
  network       = var.network
  ip_cidr_range = var.subnet_cidr

  # Nodes reach Google APIs (e.g. a download of the binary from Cloud Storage) without a
  # public IP.
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.1
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_disk" "data" {
  #checkov:skip=CKV_GCP_37:Google-managed encryption by default; customer-supplied keys are the operator's choice (terraform/README.md)
  for_each = var.nodes

  name = "${var.network_tag}-node-${each.key}-data"
  zone = local.zone[each.key]
  type = var.data_disk_type
  size = var.data_disk_size_gb
}

resource "google_compute_instance" "node" {
  #checkov:skip=CKV_GCP_38:Google-managed encryption by default; customer-supplied keys are the operator's choice (terraform/README.md)
  for_each = var.nodes

  name         = "${var.network_tag}-node-${each.key}"
  zone         = local.zone[each.key]
  machine_type = var.machine_type
  tags         = [var.network_tag]

  labels = {
    meridian-cluster = var.cluster_name
    meridian-region  = var.name
    meridian-node    = each.key
  }

  boot_disk {
    initialize_params {
      image = var.image
      size  = var.boot_disk_size_gb
    }
  }

  attached_disk {
    source      = google_compute_disk.data[each.key].id
    device_name = "meridian-data"
  }

  network_interface {
    subnetwork = google_compute_subnetwork.region.id
    network_ip = each.value.private_ip
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  metadata = {
    block-project-ssh-keys = true
    user-data = templatefile("${path.module}/cloud-init.yaml.tftpl", {
      node_id       = each.key
      user          = var.user
      config_root   = var.config_root
      data_dir      = "${var.data_root}/node-${each.key}"
      binary        = var.meridian_binary
      download_url  = var.download_url
      topology_toml = var.topology_toml
      node_toml     = each.value.node_toml
      config_path   = each.value.config_path
      unit_name     = each.value.unit_name
      unit          = each.value.unit
      tls           = lookup(var.tls_files, each.key, null)
    })
  }

  allow_stopping_for_update = true

  # cloud-init runs once per instance: a node whose rendered files changed is replaced (its
  # data disk is kept and attached to the new VM).
  lifecycle {
    replace_triggered_by = [terraform_data.rendered[each.key]]
  }
}

resource "terraform_data" "rendered" {
  for_each = var.nodes

  input = sha256(join("\n", [var.topology_toml, each.value.node_toml, each.value.unit]))
}

# Outbound internet for nodes without public IPs (fetching the binary, OS packages).
resource "google_compute_router" "region" {
  name    = "${var.network_tag}-${var.name}"
  region  = var.cloud_region
  network = var.network
}

resource "google_compute_router_nat" "region" {
  name                               = "${var.network_tag}-${var.name}"
  router                             = google_compute_router.region.name
  region                             = var.cloud_region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = google_compute_subnetwork.region.id
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

resource "google_dns_record_set" "endpoint" {
  managed_zone = var.dns_zone
  name         = "${var.name}.${var.dns_name}"
  type         = "A"
  ttl          = 60
  rrdatas      = [for n in values(var.nodes) : n.private_ip]
}
