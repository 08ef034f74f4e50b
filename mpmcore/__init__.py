"""mpmcore: an HTTP/1.1 server core that runs Apache httpd's prefork, worker and event MPMs."""

__version__ = "0.1.0"
