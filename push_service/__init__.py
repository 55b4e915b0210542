"""push_service: consumes push.queue, sends through FCM HTTP v1, prunes dead device tokens."""
