"""RabbitMQ: topology as data, a confirmed publisher, a consumer with retry and dead-letter."""
