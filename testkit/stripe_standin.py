"""A strict stand-in for the part of Stripe's API that Wharf calls, for tests.

It refuses what Stripe refuses rather than accepting anything:
- every form parameter, at every depth, is checked against the parameter definitions that
  the official `stripe` package ships (`stripe.params`): an unknown name is a 400
  `parameter_unknown`, a missing required one a 400 `parameter_missing`, a hash where a
  scalar belongs (or the reverse) a 400 `parameter_invalid_*`;
- objects move through Stripe's states: items only on draft invoices, finalizing only a
  draft, sending only an open `send_invoice` invoice, transfers only to accounts whose
  `transfers` capability is active;
- the secret key is checked, and `Idempotency-Key` is honoured as Stripe does: the same key
  with the same request answers the first answer (`Idempotent-Replayed: true`), with other
  parameters it is a 400 `idempotency_error`;
- events are shaped as Stripe's (`object: event`, `data.object`) and POSTed to the endpoint
  the test registers, signed with `Stripe-Signature: t=…,v1=…` (HMAC-SHA256 of `t.body`).

Paths under `/_standin/` stand for what happens outside the API in real life (a customer
completes a Checkout page or pays a hosted invoice, a vendor finishes onboarding, Stripe has
an outage, a test clock moves); `GET /_standin/state` shows every object for assertions.

Usage: python stripe_standin.py --secret-key sk_test_x --webhook-secret whsec_x
It prints `listening on http://127.0.0.1:PORT` when ready and exits when its parent does.
"""

import argparse
import hashlib
import hmac
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import stripe.params as params
import stripe.params.checkout as checkout_params
from stripe._request_options import RequestOptions

API_VERSION = "2024-06-20"
# Request options of the Python library, not API parameters.
OPTIONS = set(RequestOptions.__annotations__)
# Names in annotations that are typing, not parameter definitions.
TYPING = {"List", "Dict", "Literal", "NotRequired", "Union", "ForwardRef", "UntypedStripeObject"}

# (method, path pattern) -> parameter definition.
DEFINITIONS = [
    ("POST", r"/v1/customers", params.CustomerCreateParams),
    ("POST", r"/v1/customers/(?P<id>cus_\w+)", params.CustomerUpdateParams),
    ("POST", r"/v1/invoices", params.InvoiceCreateParams),
    ("POST", r"/v1/invoiceitems", params.InvoiceItemCreateParams),
    ("GET", r"/v1/invoiceitems", params.InvoiceItemListParams),
    ("POST", r"/v1/invoices/(?P<id>in_\w+)/finalize", params.InvoiceFinalizeInvoiceParams),
    ("POST", r"/v1/invoices/(?P<id>in_\w+)/send", params.InvoiceSendInvoiceParams),
    ("GET", r"/v1/invoices/(?P<id>in_\w+)", params.InvoiceRetrieveParams),
    ("POST", r"/v1/checkout/sessions", checkout_params.SessionCreateParams),
    ("POST", r"/v1/accounts", params.AccountCreateParams),
    ("POST", r"/v1/account_links", params.AccountLinkCreateParams),
    ("POST", r"/v1/transfers", params.TransferCreateParams),
]


class Refused(Exception):
    """A request Stripe answers with an error."""

    def __init__(self, status, message, code=None, param=None, kind="invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": kind, "message": message}}
        if code:
            self.body["error"]["code"] = code
        if param:
            self.body["error"]["param"] = param


def nest(pairs):
    """Stripe's form encoding (`a[b][c]=v`, `a[0][b]=v`, `a[]=v`) into nested dicts; list
    indexes become dict keys ("0", "1"…, or a running count for `[]`)."""
    root = {}
    for name, value in pairs:
        parts = re.findall(r"^[^\[]+|\[[^\]]*\]", name)
        if not parts or "".join(parts) != name:
            raise Refused(400, f"Invalid parameter name: {name}", "parameter_unknown", name)
        keys = [parts[0]] + [p[1:-1] for p in parts[1:]]
        node = root
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            if key == "":
                key = str(len(node))
            if last:
                if isinstance(node.get(key), dict):
                    raise Refused(400, f"Invalid hash: {name}", "parameter_invalid_string", name)
                node[key] = value
            else:
                child = node.setdefault(key, {})
                if not isinstance(child, dict):
                    raise Refused(400, f"Invalid hash: {name}", "parameter_invalid_string", name)
                node = child
    return root


def nested_definition(definition, annotation):
    """The parameter definition a field's annotation names, if it names one."""
    module = sys.modules[definition.__module__]
    for name in re.findall(r"[A-Z]\w+", repr(annotation)):
        if name in TYPING:
            continue
        found = getattr(module, name, None)
        if isinstance(found, type) and hasattr(found, "__required_keys__"):
            return found
    return None


def check(definition, given, path=""):
    """Refuses names the definition does not have and required ones it lacks, recursively."""
    fields = {k: v for k, v in definition.__annotations__.items() if k not in OPTIONS}
    for name, value in given.items():
        where = f"{path}[{name}]" if path else name
        if name not in fields:
            raise Refused(400, f"Received unknown parameter: {where}", "parameter_unknown", where)
        annotation = repr(fields[name])
        inner = nested_definition(definition, fields[name])
        is_map = "Dict[" in annotation
        is_list = "List[" in annotation
        if isinstance(value, dict):
            if value and not (inner or is_map or is_list):
                raise Refused(400, f"Invalid string: {where}", "parameter_invalid_string", where)
            if inner and not is_map:
                items = value.values() if is_list else [value]
                for n, item in enumerate(items):
                    if not isinstance(item, dict):
                        raise Refused(400, f"Invalid object: {where}", "parameter_invalid_object", where)
                    check(inner, item, f"{where}[{n}]" if is_list else where)
        elif inner and value != "" and not is_map:
            raise Refused(400, f"Invalid object: {where}", "parameter_invalid_object", where)
    for name in sorted(definition.__required_keys__ - OPTIONS):
        if name not in given:
            where = f"{path}[{name}]" if path else name
            raise Refused(400, f"Missing required param: {where}.", "parameter_missing", where)


def require(given, name):
    if given.get(name) in (None, ""):
        raise Refused(400, f"Missing required param: {name}.", "parameter_missing", name)
    return given[name]


def integer(given, name):
    try:
        return int(require(given, name))
    except ValueError:
        raise Refused(400, f"Invalid integer: {given[name]}", "parameter_invalid_integer", name)


class Books:
    """Every object, request and event of one stand-in, under one lock."""

    def __init__(self, secret_key, webhook_secret, base, connect_webhook_secret=None):
        self.lock = threading.RLock()
        self.secret_key = secret_key
        self.webhook_secret = webhook_secret
        # Connected accounts' events come from a Connect endpoint, signed with its secret.
        self.connect_webhook_secret = connect_webhook_secret or webhook_secret
        self.base = base
        self.endpoint = None
        self.clock = None  # a test clock: fixed unix seconds, or the system's
        self.objects = {}  # id -> object
        self.idempotent = {}  # key -> (request, status, body)
        self.requests = []  # (method, path, form) of every authenticated call
        self.events = []  # every event made
        self.outbox = []  # events made and not delivered yet
        self.delivering = threading.Lock()
        self.deliveries = []  # (event id, status) of every delivery attempt
        self.failures = []  # injected failures: {"method", "path", "status", "times"}

    def now(self):
        return int(self.clock if self.clock is not None else time.time())

    def new(self, prefix, **fields):
        obj = {"id": f"{prefix}_{uuid.uuid4().hex[:24]}", "created": self.now(), "livemode": False}
        obj.update(fields)
        self.objects[obj["id"]] = obj
        return obj

    def get(self, oid, kind, param):
        obj = self.objects.get(oid)
        if obj is None or obj["object"] != kind:
            label = kind.replace("_", " ").title().replace(" ", "")
            raise Refused(400, f"No such {label}: '{oid}'", "resource_missing", param)
        return obj

    def emit(self, kind, obj):
        """Makes an event of `obj` and delivers it (in order, on the caller's thread)."""
        event = {
            "id": f"evt_{uuid.uuid4().hex[:24]}",
            "object": "event",
            "api_version": API_VERSION,
            "created": self.now(),
            "type": kind,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": json.loads(json.dumps(obj))},
        }
        self.events.append(event)
        self.outbox.append(event)
        return event

    def flush(self):
        """Delivers the events made so far, in order, outside the books' lock (the receiver
        may call the API while it handles one)."""
        with self.delivering:
            while True:
                with self.lock:
                    if not self.outbox:
                        return
                    event = self.outbox.pop(0)
                    endpoint = self.endpoint
                if endpoint:
                    self.deliver(endpoint, event)

    def deliver(self, endpoint, event):
        body = json.dumps(event).encode()
        t = self.now()
        secret = self.connect_webhook_secret if event["type"].startswith("account.") else self.webhook_secret
        mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256)
        request = urllib.request.Request(
            endpoint,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": f"t={t},v1={mac.hexdigest()}",
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            },
        )
        for attempt in range(3):
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    status = answer.status
            except urllib.error.HTTPError as e:
                status = e.code
            except OSError:
                status = 0
            self.deliveries.append({"event": event["id"], "type": event["type"], "status": status})
            if 200 <= status < 300:
                return
            time.sleep(0.2 * (attempt + 1))


# ---------------------------------------------------------------- API operations


def create_customer(b, f, _):
    return b.new(
        "cus",
        object="customer",
        email=f.get("email"),
        name=f.get("name"),
        metadata=f.get("metadata", {}),
        invoice_settings={"default_payment_method": None},
    )


def update_customer(b, f, m):
    customer = b.get(m["id"], "customer", "id")
    pm = f.get("invoice_settings", {}).get("default_payment_method")
    if pm is not None:
        method = b.get(pm, "payment_method", "invoice_settings[default_payment_method]")
        if method.get("customer") != customer["id"]:
            raise Refused(
                400,
                f"The customer does not have a payment method with the ID {pm}. The payment "
                "method must be attached to the customer.",
                "resource_missing",
                "invoice_settings[default_payment_method]",
            )
        customer["invoice_settings"]["default_payment_method"] = pm
    for k, v in f.get("metadata", {}).items():
        customer["metadata"][k] = v
    if "email" in f:
        customer["email"] = f["email"]
    return customer


def create_invoice(b, f, _):
    customer = b.get(require(f, "customer"), "customer", "customer")
    method = f.get("collection_method", "charge_automatically")
    if method not in ("charge_automatically", "send_invoice"):
        raise Refused(400, f"Invalid collection_method: {method}", "parameter_invalid_string", "collection_method")
    if method == "send_invoice" and "days_until_due" not in f and "due_date" not in f:
        raise Refused(
            400,
            "Invoices with `collection_method=send_invoice` must have either `due_date` or "
            "`days_until_due` set.",
            "parameter_missing",
            "days_until_due",
        )
    if method == "charge_automatically" and ("days_until_due" in f or "due_date" in f):
        raise Refused(
            400,
            "Can't set `days_until_due` or `due_date` when `collection_method` is "
            "`charge_automatically`.",
            "parameter_invalid_empty",
            "days_until_due",
        )
    return b.new(
        "in",
        object="invoice",
        customer=customer["id"],
        currency=f.get("currency", "usd"),
        collection_method=method,
        auto_advance=f.get("auto_advance", "true") == "true",
        description=f.get("description"),
        metadata=f.get("metadata", {}),
        status="draft",
        amount_due=0,
        amount_paid=0,
        attempt_count=0,
        hosted_invoice_url=None,
        number=None,
        lines={"object": "list", "data": []},
        sent=False,
    )


def create_invoice_item(b, f, _):
    customer = b.get(require(f, "customer"), "customer", "customer")
    amount = integer(f, "amount")
    currency = require(f, "currency")
    item = {"object": "invoiceitem", "customer": customer["id"], "amount": amount,
            "currency": currency, "description": f.get("description"),
            "metadata": f.get("metadata", {})}
    if "invoice" in f:
        invoice = b.get(f["invoice"], "invoice", "invoice")
        if invoice["status"] != "draft":
            raise Refused(
                400,
                f"You can only add invoice items to draft invoices. Invoice {invoice['id']} "
                f"has status {invoice['status']}.",
                "invoice_not_editable",
                "invoice",
            )
        if invoice["customer"] != customer["id"]:
            raise Refused(400, "The invoice belongs to another customer.", "parameter_invalid_string", "invoice")
        if invoice["currency"] != currency:
            raise Refused(400, "The currency differs from the invoice's.", "parameter_invalid_string", "currency")
    made = b.new("ii", invoice=f.get("invoice"), **item)
    if "invoice" in f:
        invoice["lines"]["data"].append(made)
        invoice["amount_due"] += amount
    return made


def list_invoice_items(b, f, _):
    """Items by newest first, `limit` (at most 100) a page, after `starting_after`."""
    limit = min(int(f.get("limit", "10")), 100)
    items = [o for o in b.objects.values() if o["object"] == "invoiceitem"
             and ("invoice" not in f or o.get("invoice") == f["invoice"])][::-1]
    if "starting_after" in f:
        ids = [o["id"] for o in items]
        if f["starting_after"] not in ids:
            raise Refused(400, f"No such invoiceitem: '{f['starting_after']}'", "resource_missing", "starting_after")
        items = items[ids.index(f["starting_after"]) + 1:]
    return {"object": "list", "url": "/v1/invoiceitems", "data": items[:limit],
            "has_more": len(items) > limit}


def finalize_invoice(b, f, m):
    invoice = b.get(m["id"], "invoice", "id")
    if invoice["status"] != "draft":
        raise Refused(
            400,
            "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
            "invoice_not_editable",
        )
    if "auto_advance" in f:
        invoice["auto_advance"] = f["auto_advance"] == "true"
    invoice["status"] = "open"
    invoice["number"] = f"WHARF-{len([o for o in b.objects.values() if o.get('number')]) + 1:04}"
    invoice["hosted_invoice_url"] = f"{b.base}/invoice/{invoice['id']}"
    b.emit("invoice.finalized", invoice)
    if invoice["amount_due"] == 0:
        settle(b, invoice, True)
    elif invoice["collection_method"] == "charge_automatically" and invoice["auto_advance"]:
        # Stripe attempts the charge a while after finalizing; the answer comes first.
        def later():
            attempt(b, invoice["id"])
            b.flush()

        threading.Timer(0.05, later).start()
    return invoice


def send_invoice(b, _f, m):
    invoice = b.get(m["id"], "invoice", "id")
    if invoice["collection_method"] != "send_invoice":
        raise Refused(
            400,
            "You can only manually send an invoice if its collection method is 'send_invoice'.",
            "invoice_not_editable",
        )
    if invoice["status"] != "open":
        raise Refused(
            400,
            f"You can only send invoices that are open; this one is {invoice['status']}.",
            "invoice_not_editable",
        )
    invoice["sent"] = True
    b.emit("invoice.sent", invoice)
    return invoice


def retrieve_invoice(b, _f, m):
    return b.get(m["id"], "invoice", "id")


def create_checkout_session(b, f, _):
    mode = require(f, "mode")
    if mode != "setup":
        raise Refused(400, "This stand-in makes Checkout Sessions in `setup` mode only.", "parameter_invalid_string", "mode")
    if f.get("ui_mode", "hosted") == "hosted":
        require(f, "success_url")
    if "line_items" in f:
        raise Refused(400, "You can't pass `line_items` in `setup` mode.", "parameter_unknown", "line_items")
    if "currency" not in f and "allowed_payment_method_types" not in f:
        raise Refused(
            400,
            "`currency` is required in `setup` mode when `allowed_payment_method_types` is not set.",
            "parameter_missing",
            "currency",
        )
    customer = f.get("customer")
    if customer:
        b.get(customer, "customer", "customer")
    intent = b.new(
        "seti",
        object="setup_intent",
        customer=customer,
        status="requires_payment_method",
        payment_method=None,
        usage="off_session",
        metadata=f.get("setup_intent_data", {}).get("metadata", {}),
    )
    session = b.new(
        "cs_test",
        object="checkout.session",
        mode=mode,
        customer=customer,
        currency=f.get("currency"),
        status="open",
        setup_intent=intent["id"],
        success_url=f.get("success_url"),
        cancel_url=f.get("cancel_url"),
        client_reference_id=f.get("client_reference_id"),
        metadata=f.get("metadata", {}),
    )
    session["url"] = f"{b.base}/checkout/{session['id']}"
    return session


def create_account(b, f, _):
    kind = f.get("type")
    if kind is None and "controller" not in f:
        raise Refused(400, "Missing required param: type.", "parameter_missing", "type")
    capabilities = f.get("capabilities", {})
    if kind == "express" and not any(v.get("requested") == "true" for v in capabilities.values()):
        raise Refused(
            400,
            "Express accounts must request at least one capability, such as `transfers`.",
            "parameter_missing",
            "capabilities",
        )
    return b.new(
        "acct",
        object="account",
        type=kind,
        email=f.get("email"),
        country=f.get("country", "US"),
        metadata=f.get("metadata", {}),
        charges_enabled=False,
        payouts_enabled=False,
        details_submitted=False,
        capabilities={k: "inactive" for k, v in capabilities.items() if v.get("requested") == "true"},
    )


def create_account_link(b, f, _):
    account = b.get(require(f, "account"), "account", "account")
    if f["type"] == "account_onboarding":
        require(f, "refresh_url")
        require(f, "return_url")
    return {
        "object": "account_link",
        "created": b.now(),
        "expires_at": b.now() + 300,
        "url": f"{b.base}/connect/{account['id']}/onboarding/{uuid.uuid4().hex[:16]}",
    }


def create_transfer(b, f, _):
    amount = integer(f, "amount")
    if amount <= 0:
        raise Refused(400, "Invalid positive integer", "parameter_invalid_integer", "amount")
    account = b.get(f["destination"], "account", "destination")
    if account["capabilities"].get("transfers") != "active":
        raise Refused(
            400,
            "Your destination account needs to have at least one of the following capabilities "
            "enabled: transfers, crypto_transfers, legacy_payments",
            "insufficient_capabilities_for_transfer",
            "destination",
        )
    return b.new(
        "tr",
        object="transfer",
        amount=amount,
        currency=f["currency"],
        destination=account["id"],
        description=f.get("description"),
        transfer_group=f.get("transfer_group"),
        metadata=f.get("metadata", {}),
        reversed=False,
    )


OPERATIONS = {
    params.CustomerCreateParams: create_customer,
    params.CustomerUpdateParams: update_customer,
    params.InvoiceCreateParams: create_invoice,
    params.InvoiceItemCreateParams: create_invoice_item,
    params.InvoiceItemListParams: list_invoice_items,
    params.InvoiceFinalizeInvoiceParams: finalize_invoice,
    params.InvoiceSendInvoiceParams: send_invoice,
    params.InvoiceRetrieveParams: retrieve_invoice,
    checkout_params.SessionCreateParams: create_checkout_session,
    params.AccountCreateParams: create_account,
    params.AccountLinkCreateParams: create_account_link,
    params.TransferCreateParams: create_transfer,
}


# ---------------------------------------------------------------- what happens outside the API


def settle(b, invoice, paid):
    """A payment attempt on an open invoice: paid, or failed with the attempt counted."""
    invoice["attempt_count"] += 1
    if paid:
        invoice["status"] = "paid"
        invoice["amount_paid"] = invoice["amount_due"]
        b.emit("invoice.paid", invoice)
        b.emit("invoice.payment_succeeded", invoice)
    else:
        b.emit("invoice.payment_failed", invoice)


def attempt(b, invoice_id):
    """Charges an open invoice's customer's default payment method, as Stripe's automatic
    collection does."""
    with b.lock:
        invoice = b.objects[invoice_id]
        if invoice["status"] != "open":
            return
        customer = b.objects[invoice["customer"]]
        pm = customer["invoice_settings"]["default_payment_method"]
        settle(b, invoice, pm is not None and not b.objects[pm]["declines"])


def complete_checkout(b, session_id, body):
    session = b.get(session_id, "checkout.session", "id")
    if session["status"] != "open":
        raise Refused(400, "This Checkout Session is no longer open.")
    method = b.new(
        "pm",
        object="payment_method",
        type="card",
        customer=session["customer"],
        card={"brand": "visa", "last4": body.get("last4", "4242")},
        declines=bool(body.get("declines", False)),
    )
    intent = b.objects[session["setup_intent"]]
    intent.update(status="succeeded", payment_method=method["id"])
    session["status"] = "complete"
    b.emit("checkout.session.completed", session)
    b.emit("setup_intent.succeeded", intent)
    return {"session": session, "payment_method": method}


def pay_hosted(b, invoice_id, body):
    invoice = b.get(invoice_id, "invoice", "id")
    if invoice["status"] != "open":
        raise Refused(400, f"Invoice {invoice_id} is {invoice['status']}, not open.")
    settle(b, invoice, body.get("outcome", "succeeded") == "succeeded")
    return invoice


def onboard(b, account_id, _body):
    account = b.get(account_id, "account", "id")
    account.update(details_submitted=True, payouts_enabled=True, charges_enabled=True)
    for name in account["capabilities"]:
        account["capabilities"][name] = "active"
    b.emit("account.updated", account)
    return account


CONTROLS = [
    (r"/_standin/checkout/(?P<id>[\w]+)/complete", complete_checkout),
    (r"/_standin/invoices/(?P<id>in_\w+)/pay", pay_hosted),
    (r"/_standin/invoices/(?P<id>in_\w+)/attempt", lambda b, i, _: attempt(b, i) or b.objects[i]),
    (r"/_standin/accounts/(?P<id>acct_\w+)/onboard", onboard),
]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    books = None

    def log_message(self, *_):
        pass

    def answer(self, status, body, replayed=False):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", f"req_{uuid.uuid4().hex[:14]}")
        if replayed:
            self.send_header("Idempotent-Replayed", "true")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def handle_any(self, method):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        b = self.books
        try:
            with b.lock:
                if url.path.startswith("/_standin/"):
                    status, body, replayed = 200, self.control(method, url.path, raw), False
                else:
                    status, body, replayed = self.api(method, url.path, raw or url.query.encode())
        except Refused as e:
            status, body, replayed = e.status, e.body, False
        # Events go out before a control call answers, after an API call does (as Stripe's).
        if url.path.startswith("/_standin/"):
            b.flush()
            self.answer(status, body, replayed)
        else:
            self.answer(status, body, replayed)
            b.flush()

    def control(self, method, path, raw):
        b = self.books
        body = json.loads(raw) if raw else {}
        if method == "GET" and path == "/_standin/state":
            return {"objects": b.objects, "requests": b.requests, "events": b.events,
                    "deliveries": b.deliveries}
        if path == "/_standin/endpoint":
            b.endpoint = body["url"]
            return {"url": b.endpoint}
        if path == "/_standin/forget-keys":
            # Stripe keeps idempotency keys for 24 hours.
            b.idempotent.clear()
            return {"forgotten": True}
        if path == "/_standin/clock":
            b.clock = body.get("now")
            return {"now": b.now()}
        if path == "/_standin/fail":
            b.failures.append({"method": body.get("method", "POST"), "path": body["path"],
                               "status": body.get("status", 500), "times": body.get("times", 1)})
            return {"failures": b.failures}
        for pattern, act in CONTROLS:
            m = re.fullmatch(pattern, path)
            if m:
                return act(b, m["id"], body)
        raise Refused(404, f"Unrecognized request URL ({method}: {path}).")

    def api(self, method, path, raw):
        b = self.books
        auth = self.headers.get("Authorization", "")
        if auth != f"Bearer {b.secret_key}":
            raise Refused(401, "Invalid API Key provided.", kind="invalid_request_error")
        entry = {"method": method, "path": path, "idempotency_key": self.headers.get("Idempotency-Key")}
        b.requests.append(entry)
        try:
            status, body, replayed = self.checked(method, path, raw, entry)
        except Refused as e:
            entry["status"] = e.status
            raise
        entry["status"] = status
        return status, body, replayed

    def checked(self, method, path, raw, entry):
        b = self.books
        given = nest(parse_qsl(raw.decode(), keep_blank_values=True))
        entry["form"] = given
        for i, fail in enumerate(b.failures):
            if fail["method"] == method and re.fullmatch(fail["path"], path):
                fail["times"] -= 1
                if fail["times"] <= 0:
                    b.failures.pop(i)
                raise Refused(fail["status"], "An error occurred with our connection to Stripe.",
                              kind="api_error")
        for verb, pattern, definition in DEFINITIONS:
            m = re.fullmatch(pattern, path)
            if verb == method and m:
                break
        else:
            raise Refused(404, f"Unrecognized request URL ({method}: {path}).")
        key = self.headers.get("Idempotency-Key") if method == "POST" else None
        request = (method, path, given)
        if key in b.idempotent:
            first, status, body = b.idempotent[key]
            if first != request:
                raise Refused(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with. Try using a key other than "
                    f"'{key}' if you meant to execute a different request.",
                    kind="idempotency_error",
                )
            return status, body, True
        check(definition, given)
        try:
            status, body = 200, json.loads(json.dumps(OPERATIONS[definition](b, given, m.groupdict())))
        except Refused as e:
            status, body = e.status, e.body
        if key:
            b.idempotent[key] = (request, status, body)
        return status, body, False


def watch_parent(parent):
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--secret-key", required=True)
    parser.add_argument("--webhook-secret", required=True)
    parser.add_argument("--connect-webhook-secret")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    Handler.books = Books(args.secret_key, args.webhook_secret, base, args.connect_webhook_secret)
    threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()
    print(f"listening on {base}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
