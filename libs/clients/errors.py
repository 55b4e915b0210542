"""How a call to another service failed, in terms a consumer can act on."""


class UpstreamError(Exception):
    """Base class: ``transient`` says whether trying again later can help."""

    transient = True

    def __init__(self, service: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.status = status


class UpstreamUnavailable(UpstreamError):
    """Connection refused, timeout or 5xx: try again later."""


class UpstreamNotFound(UpstreamError):
    """The resource does not exist (404): retrying will not help."""

    transient = False


class UpstreamRejected(UpstreamError):
    """The request was refused as invalid (4xx other than 404/401/429): retrying will not help."""

    transient = False

    def __init__(
        self, service: str, message: str, status: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(service, message, status)
        self.code = code
