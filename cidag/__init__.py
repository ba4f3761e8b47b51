"""cidag: first-boot provisioning (cloud-init's job) as a declarative DAG engine."""

__version__ = "0.1.0"
