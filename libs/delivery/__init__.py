"""The delivery engine email_service and push_service share: the pipeline and its pure decisions,
providers with breakers and failover, send claims, and the process around them."""
