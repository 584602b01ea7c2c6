@ssl
Feature: SSL certificates installed
  The runbook's checklist item "Certificats SSL installés". The runbook ran certbot --standalone
  and copied the files by hand; here the live endpoint must show what a client sees: a
  certificate it trusts, for the domain, not about to expire, the one installed in nginx,
  served over TLS 1.2 or newer only, with HSTS, and plain HTTP sent to HTTPS.

  Background:
    Given the staging target
    And the certificate authority its clients trust

  Scenario: Only TLS 1.2 and TLS 1.3 are accepted
    When the HTTPS endpoint of staging is checked
    Then TLS 1.0 and TLS 1.1 are refused
    And TLS 1.2 and TLS 1.3 are accepted

  Scenario: The certificate is trusted for the domain and is not about to expire
    When the HTTPS endpoint of staging is checked
    Then the certificate is trusted and covers the domain
    And it is valid for longer than its expiry margin (14 days, or a sixth of a shorter lifetime)

  Scenario: nginx serves the certificate that is installed
    When the HTTPS endpoint of staging is checked
    Then the served certificate is the one installed in nginx

  Scenario: HSTS is sent with a long max-age, error pages included
    When the HTTPS endpoint of staging is checked
    Then HSTS with a max-age of at least one year is sent on a page and on an error page

  Scenario: Plain HTTP is redirected to HTTPS
    When the HTTPS endpoint of staging is checked
    Then plain HTTP is redirected to HTTPS
