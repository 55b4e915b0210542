"""template_service: notification templates with versions and languages, rendered in a sandbox.

Templates are identified by ``code`` and ``language``; every change creates a new version and one
version per (code, language) is active. Email and push services call ``POST
/api/v1/templates/{code}/render`` (see ``libs.clients.templates``) and cache the result in Redis;
this service bumps the ``template`` cache version after every committed change.
"""
