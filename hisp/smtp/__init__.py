"""SMTP listeners: backbone ingress (other HISPs) and the authenticated submission port."""
