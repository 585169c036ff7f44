"""The official Stripe SDK against our simulator (run by tests/official_sdks.rs).

Reads the balance through the SDK's own request and response code, once with the client
(`StripeClient(base_addresses=...)`) and once with the module-level API (`stripe.api_base`),
for the platform and for a connected account (`stripe_account`), and provokes each documented
refusal. Prints one JSON document: what the SDK parsed and which exception classes it raised.
Configured by the environment: STRIPE_SIM_BASE, STRIPE_SIM_KEY, STRIPE_SIM_ACCOUNT, and the
keys STRIPE_SIM_{WRONG,EXPIRED,RESTRICTED,LIMITED,FAILING}_KEY.
"""

import json
import os
import sys

# This file's own folder comes first on the path, and this file is named like the SDK.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]

import stripe  # noqa: E402
import stripe._version  # noqa: E402

BASE = os.environ["STRIPE_SIM_BASE"]
KEY = os.environ["STRIPE_SIM_KEY"]
ACCOUNT = os.environ["STRIPE_SIM_ACCOUNT"]


def lists(balance):
    """Every list of the balance object as [currency, amount] pairs, read through the model."""
    assert isinstance(balance, stripe.Balance), type(balance)
    assert balance.object == "balance", balance.object
    out = {}
    for name in ("available", "pending", "instant_available", "connect_reserved"):
        entries = getattr(balance, name, None)
        if entries is not None:
            out[name] = [[e.currency, e.amount] for e in entries]
    issuing = getattr(balance, "issuing", None)
    if issuing is not None:
        out["issuing_available"] = [[e.currency, e.amount] for e in issuing.available]
    prefunding = getattr(balance, "refund_and_dispute_prefunding", None)
    if prefunding is not None:
        for name in ("available", "pending"):
            out["refund_and_dispute_prefunding_" + name] = [
                [e.currency, e.amount] for e in getattr(prefunding, name)
            ]
    for entries in out.values():
        for currency, amount in entries:
            assert isinstance(amount, int) and not isinstance(amount, bool), amount
            assert currency == currency.lower(), currency
    return out


def client(key, **options):
    return stripe.StripeClient(
        key, base_addresses={"api": BASE}, max_network_retries=0, **options
    )


def refusal(key, **options):
    try:
        client(key, **options).v1.balance.retrieve()
    except stripe.StripeError as e:
        return {
            "exception": type(e).__name__,
            "http_status": e.http_status,
            # The SDK's `error` is the envelope as parsed (AuthenticationError has no `code`).
            "code": (e.error.code if e.error is not None else None),
            "type": (e.error.type if e.error is not None else None),
        }
    return {"exception": None}


def main():
    result = {
        "sdk_version": stripe._version.VERSION,
        "platform": lists(client(KEY).v1.balance.retrieve()),
        "connected": lists(client(KEY, stripe_account=ACCOUNT).v1.balance.retrieve()),
    }
    # The module-level API, as older integrations use it.
    stripe.api_key = KEY
    stripe.api_base = BASE
    stripe.max_network_retries = 0
    result["module_api"] = lists(stripe.Balance.retrieve())
    result["module_api_connected"] = lists(stripe.Balance.retrieve(stripe_account=ACCOUNT))
    result["refusals"] = {
        "wrong_key": refusal(os.environ["STRIPE_SIM_WRONG_KEY"]),
        "expired_key": refusal(os.environ["STRIPE_SIM_EXPIRED_KEY"]),
        "restricted_key": refusal(os.environ["STRIPE_SIM_RESTRICTED_KEY"]),
        "foreign_account": refusal(KEY, stripe_account="acct_1NotConnectedSdk"),
        "rate_limited": refusal(os.environ["STRIPE_SIM_LIMITED_KEY"]),
        "api_error": refusal(os.environ["STRIPE_SIM_FAILING_KEY"]),
    }
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
