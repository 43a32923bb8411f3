"""The gateway: one object over a ccxt exchange for every broker (paper and live)."""

from bot.gateway.gateway import (
    EVENT_KINDS,
    Event,
    Gateway,
    GatewayAuthError,
    GatewayError,
    GatewayRefusedStart,
    GatewayRejected,
    GatewayUnavailable,
    client_order_id,
)
from bot.gateway.venues import VENUES, Venue, venue_for

__all__ = ["EVENT_KINDS", "VENUES", "Event", "Gateway", "GatewayAuthError", "GatewayError", "GatewayRefusedStart",
           "GatewayRejected", "GatewayUnavailable", "Venue", "client_order_id", "venue_for"]
