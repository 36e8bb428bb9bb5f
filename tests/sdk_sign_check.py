#!/usr/bin/env python3
"""Recompute the signatures of requests the appendfs client sent, with the official SDKs' signers.

    .venv/bin/python tests/sdk_sign_check.py CAPTURED.json

CAPTURED.json is written by `signatures_match_the_official_sdks` in tests/client.rs: a list of
requests as they crossed the wire (method, raw request target, headers) plus the credentials,
region, bucket and intended key. For each request this script

  * derives bucket and key from the raw target (and Host, for virtual-hosted requests) the way
    the service does, and requires the key to be the one the call was made for;
  * recomputes the signature with oss2 2.19.1 (`ProviderAuthV4` / `ProviderAuth` internals) from
    the decoded query parameters and the headers, and with alibabacloud-oss-v2 1.4.1
    (`SignerV4` / `SignerV1`) from the raw URL, both at the request's own timestamp;
  * requires both to equal what the client sent.

Exit status 0 only if every request matches both SDKs. The venv comes from scripts/setup-python.sh.
"""

import datetime
import email.utils
import json
import sys
from urllib.parse import unquote

try:
    import oss2
    import oss2.http
    from oss2.credentials import Credentials as Oss2Credentials
    from alibabacloud_oss_v2.signer.v1 import SignerV1
    from alibabacloud_oss_v2.signer.v4 import SignerV4
    from alibabacloud_oss_v2.types import Credentials as V2Creds
    from alibabacloud_oss_v2.types import HttpRequest, SigningContext
except ImportError as e:  # a setup problem, not a signature mismatch
    sys.exit(f"cannot import the OSS SDKs ({e}); run scripts/setup-python.sh")


def split_target(case):
    """Bucket, key (None for bucket level) and decoded query pairs, as the service reads them."""
    req = case["request"]
    path, _, raw_query = req["target"].partition("?")
    headers = dict(req["headers"])
    if case["path_style"]:
        rest = path[1:]
        raw_bucket, _, raw_key = rest.partition("/")
        bucket = unquote(raw_bucket)
    else:
        host = headers["host"].split(":")[0]
        bucket = host.split(".")[0]
        raw_key = path[1:]
    key = unquote(raw_key, errors="strict") if raw_key else None
    params = []
    if raw_query:
        for pair in raw_query.split("&"):
            k, _, v = pair.partition("=")
            params.append((unquote(k), unquote(v)))
    return bucket, key, raw_query, params


def oss2_signature(case, method, bucket, key, params, headers):
    creds = Oss2Credentials(
        case["access_key_id"], case["access_key_secret"], case["security_token"] or ""
    )
    req = oss2.http.Request(
        method,
        "http://unused",
        params=dict(params),
        headers=dict(headers),
        region=case["region"],
        product="oss",
    )
    if case["version"] == "v4":
        auth = oss2.AuthV4(case["access_key_id"], case["access_key_secret"])
        return auth._ProviderAuthV4__make_signature(
            req, bucket, key or "", None, creds, headers["x-oss-date"]
        )
    auth = oss2.Auth(case["access_key_id"], case["access_key_secret"])
    return auth._ProviderAuth__make_signature(req, bucket, key or "", creds)


def v2_authorization(case, method, bucket, key, raw_query, headers):
    url = "http://" + headers["host"] + "/" + ("?" + raw_query if raw_query else "")
    request = HttpRequest(method, url, headers=dict(headers))
    if case["version"] == "v4":
        when = datetime.datetime.strptime(headers["x-oss-date"], "%Y%m%dT%H%M%SZ")
        signer = SignerV4()
    else:
        when = email.utils.parsedate_to_datetime(headers["date"])
        signer = SignerV1()
    ctx = SigningContext(
        product="oss",
        region=case["region"],
        bucket=bucket,
        key=key,
        request=request,
        credentials=V2Creds(
            case["access_key_id"], case["access_key_secret"], case["security_token"]
        ),
        signing_time=when.replace(tzinfo=datetime.timezone.utc),
    )
    signer.sign(ctx)
    return request.headers["Authorization"]


def check(case):
    """A list of problems with one captured request (empty when it matches)."""
    problems = []
    req = case["request"]
    headers = {}
    for name, value in req["headers"]:
        headers[name.lower()] = value
    sent = headers.pop("authorization", None)
    if sent is None:
        return ["no Authorization header"]

    bucket, key, raw_query, params = split_target(case)
    if bucket != case["bucket"]:
        problems.append(f"bucket from the wire {bucket!r} != {case['bucket']!r}")
    if key != case["key"]:
        problems.append(f"key from the wire {key!r} != intended {case['key']!r}")
    token = case["security_token"]
    if token and headers.get("x-oss-security-token") != token:
        problems.append("STS token not sent in x-oss-security-token")

    if case["version"] == "v4":
        date = headers.get("x-oss-date", "")
        scope = f"{date[:8]}/{case['region']}/oss/aliyun_v4_request"
        prefix = f"OSS4-HMAC-SHA256 Credential={case['access_key_id']}/{scope},Signature="
        if headers.get("x-oss-content-sha256") != "UNSIGNED-PAYLOAD":
            problems.append("x-oss-content-sha256 is not UNSIGNED-PAYLOAD")
        if not sent.startswith(prefix):
            problems.append(f"Authorization {sent!r} does not start with {prefix!r}")
        sent_sig = sent.rpartition("Signature=")[2]
    else:
        prefix = f"OSS {case['access_key_id']}:"
        if not sent.startswith(prefix):
            problems.append(f"Authorization {sent!r} does not start with {prefix!r}")
        sent_sig = sent[len(prefix):]

    ours = oss2_signature(case, req["method"], bucket, key, params, headers)
    if ours != sent_sig:
        problems.append(f"oss2 signs {ours!r}, client sent {sent_sig!r}")
    theirs = v2_authorization(case, req["method"], bucket, key, raw_query, headers)
    if theirs != sent:
        problems.append(f"alibabacloud-oss-v2 gives {theirs!r}, client sent {sent!r}")
    return problems


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    failed = 0
    kinds = set()
    for case in cases:
        kinds.add((case["version"], case["request"]["method"], bool(case["security_token"])))
        problems = check(case)
        if problems:
            failed += 1
            print(f"MISMATCH {case['label']}: {case['request']['method']} {case['request']['target']}")
            for p in problems:
                print(f"    {p}")
    print(
        f"{len(cases)} requests ({len(kinds)} version/method/token combinations): "
        f"{len(cases) - failed} match oss2 and alibabacloud-oss-v2, {failed} do not"
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
