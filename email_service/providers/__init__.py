"""Email providers: each one implements libs.providers.Provider[EmailMessage]."""
