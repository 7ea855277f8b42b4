# One region of a Meridian cluster on GCP: its subnet, a VM and a data disk per node (each at
# the private IP the topology gives it, configured by cloud-init with its rendered node.toml
# and systemd unit), and REGION.<zone> naming every node of the region.

locals {
  zone = "${var.cloud_region}-${var.zone_suffix}"
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
  zone = local.zone
  type = var.data_disk_type
  size = var.data_disk_size_gb
}

resource "google_compute_instance" "node" {
  #checkov:skip=CKV_GCP_38:Google-managed encryption by default; customer-supplied keys are the operator's choice (terraform/README.md)
  for_each = var.nodes

  name         = "${var.network_tag}-node-${each.key}"
  zone         = local.zone
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
}

resource "google_dns_record_set" "endpoint" {
  managed_zone = var.dns_zone
  name         = "${var.name}.${var.dns_name}"
  type         = "A"
  ttl          = 60
  rrdatas      = [for n in values(var.nodes) : n.private_ip]
}
