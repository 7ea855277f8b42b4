output "endpoint" {
  description = "The region's endpoint: its DNS name (every node of the region) and the nodes' port."
  value       = "${trimsuffix(google_dns_record_set.endpoint.name, ".")}:${values(var.nodes)[0].port}"
}

output "node_ips" {
  description = "id => private IP of the region's nodes."
  value       = { for id, n in google_compute_instance.node : id => n.network_interface[0].network_ip }
}
