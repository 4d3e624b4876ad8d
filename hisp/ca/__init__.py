"""The built-in certificate authority: issuing CAs, certificates, CRLs and the OCSP responder."""
