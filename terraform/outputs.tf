output "endpoints" {
  description = "Each region's endpoint (host:port) for the SDK and the CLI: `meridian --endpoint E --region R`."
  value       = { for name, r in module.region : name => r.endpoint }
}

output "node_ips" {
  description = "Each region's nodes: id => private IP."
  value       = { for name, r in module.region : name => r.node_ips }
}
