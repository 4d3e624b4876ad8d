"""Webmail views, one module per screen."""
