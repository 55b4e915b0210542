"""Code shared by two or more services: settings, logging, messaging, envelopes, auth, clients."""
