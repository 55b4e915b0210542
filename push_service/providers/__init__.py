"""Push providers: each implements libs.delivery.providers.Provider[dict] (an FCM v1 message)."""
