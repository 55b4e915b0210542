"""email_service: consumes email.queue, renders, sends over SMTP with failover, records status."""
