"""CRM and messaging connectors: webhook endpoints whose deliveries go to an API instead of a receiver.

`registry` maps an endpoint `format` to its connector; the sender (routing.webhooks.sender) dispatches a claim of
such an endpoint to `connector.deliver(claim)`, and everything else about the delivery (rows, leases, retries with
Retry-After, replay, /ops failure rows) stays the webhook machinery's. Add a connector with one line below.
"""

from routing.connectors.base import Connector, ConnectorDeps, ConnectorPool, ConnectorRegistry, connector_outcome

registry = ConnectorRegistry(
    {
        "hubspot": "routing.connectors.hubspot:HubSpotConnector",
        "salesforce": "routing.connectors.salesforce:connector",
        "email": "routing.access.mailer:EmailConnector",
    }
)

__all__ = ["Connector", "ConnectorDeps", "ConnectorPool", "ConnectorRegistry", "connector_outcome", "registry"]
