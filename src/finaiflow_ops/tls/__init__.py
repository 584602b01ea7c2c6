"""TLS certificates end to end: issue (certbot, webroot through nginx), install (validated,
atomic, graceful reload, rollback), renew (deploy hook = install; scheduled), inspect a file,
check a live endpoint, and a development CA for staging.

    from finaiflow_ops.tls import install, check_endpoint
"""

from finaiflow_ops.tls.acme import (
    LETSENCRYPT,
    LETSENCRYPT_STAGING,
    AcmeOptions,
    IssueResult,
    RenewResult,
    deploy_hook,
    install_lineage,
    issue,
    renew,
    webroot_path,
)
from finaiflow_ops.tls.certs import (
    DEFAULT_RENEW_WINDOW_DAYS,
    CertificateInfo,
    CertificateRejected,
    ChainReport,
    Validation,
    configured_domains,
    covers,
    inspect_pem,
    renewal_due,
    renewal_time,
    validate,
)
from finaiflow_ops.tls.check import EndpointReport, Finding, check_endpoint, served_certificate
from finaiflow_ops.tls.devca import (
    DevCA,
    dev_ca_dir,
    ensure_dev_ca,
    install_dev_certificate,
    issue_from_dev_ca,
)
from finaiflow_ops.tls.endpoint import check_stack_endpoint
from finaiflow_ops.tls.install import (
    InstalledPair,
    InstallResult,
    install,
    published_url,
    read_file,
    read_installed,
    restore,
    served_fingerprint,
)
from finaiflow_ops.tls.schedule import Schedule, merge_crontab, schedule, systemd_units

__all__ = [
    "DEFAULT_RENEW_WINDOW_DAYS",
    "LETSENCRYPT",
    "LETSENCRYPT_STAGING",
    "AcmeOptions",
    "CertificateInfo",
    "CertificateRejected",
    "ChainReport",
    "DevCA",
    "EndpointReport",
    "Finding",
    "InstallResult",
    "InstalledPair",
    "IssueResult",
    "RenewResult",
    "Schedule",
    "Validation",
    "check_endpoint",
    "check_stack_endpoint",
    "configured_domains",
    "covers",
    "deploy_hook",
    "dev_ca_dir",
    "ensure_dev_ca",
    "inspect_pem",
    "install",
    "install_dev_certificate",
    "install_lineage",
    "issue",
    "issue_from_dev_ca",
    "merge_crontab",
    "published_url",
    "read_file",
    "read_installed",
    "renew",
    "renewal_due",
    "renewal_time",
    "restore",
    "schedule",
    "served_certificate",
    "served_fingerprint",
    "systemd_units",
    "validate",
    "webroot_path",
]
