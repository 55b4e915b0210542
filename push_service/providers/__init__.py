"""Push providers: each one implements libs.providers.Provider[dict] (an FCM v1 message)."""
