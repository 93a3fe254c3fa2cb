#!/usr/bin/env python3
"""boto3 driven by the integration tests (tests/integration/s3_api.rs).

Every command prints one JSON object on stdout. Credentials come from the
environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) unless --unsigned.
S3 errors are printed as {"error": CODE, "status": N}, not raised.
"""
import argparse
import datetime
import hashlib
import json
import os
import sys
import threading
import time

import boto3
import botocore.auth
import botocore.compat
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from boto3.s3.transfer import TransferConfig


def client(args):
    if args.skew_minutes:
        real = botocore.compat.get_current_datetime
        shift = datetime.timedelta(minutes=args.skew_minutes)
        botocore.auth.get_current_datetime = lambda *a, **k: real(*a, **k) + shift
    cfg = Config(
        s3={"addressing_style": args.addressing},
        retries={"total_max_attempts": 1},
        signature_version=UNSIGNED if args.unsigned else "s3v4",
        # Virtual-hosted names need no DNS when sent through an HTTP proxy.
        proxies={"http": args.http_proxy} if args.http_proxy else None,
    )
    return boto3.client("s3", endpoint_url=args.endpoint, region_name="us-east-1", config=cfg)


def out(obj):
    print(json.dumps(obj))


def cmd_paginate(s3, args):
    kwargs = {"Bucket": args.bucket, "PaginationConfig": {"PageSize": args.page_size}}
    if args.delimiter:
        kwargs["Delimiter"] = args.delimiter
    if args.prefix:
        kwargs["Prefix"] = args.prefix
    keys, prefixes = [], []
    for page in s3.get_paginator("list_objects_v2").paginate(**kwargs):
        keys += [c["Key"] for c in page.get("Contents", [])]
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        if page.get("Name") != args.bucket:
            out({"error": "WrongName", "name": page.get("Name")})
            return
    out({"keys": keys, "prefixes": prefixes})


def cmd_download(s3, args):
    started = set()
    lock = threading.Lock()

    def progress(_n):
        # Each download thread, at its first bytes, tells the test and waits
        # until it killed the primary. No thread asks for another range in
        # the meantime, so the ranges not started yet all go out after the
        # kill (when only one thread waited, the others could fetch every
        # range before the test got to the kill, and no failover happened).
        if not args.pause_file:
            return
        with lock:
            if threading.get_ident() in started:
                return
            started.add(threading.get_ident())
            open(args.pause_file, "w").close()
        deadline = time.time() + 60
        while not os.path.exists(args.go_file) and time.time() < deadline:
            time.sleep(0.05)

    cfg = TransferConfig(
        multipart_threshold=args.chunk, multipart_chunksize=args.chunk, max_concurrency=4, use_threads=True
    )
    s3.download_file(args.bucket, args.key, args.out, Config=cfg, Callback=progress)
    with open(args.out, "rb") as f:
        out({"sha256": hashlib.sha256(f.read()).hexdigest()})


def cmd_get(s3, args):
    body = s3.get_object(Bucket=args.bucket, Key=args.key)["Body"].read()
    out({"sha256": hashlib.sha256(body).hexdigest(), "len": len(body)})


def cmd_list(s3, args):
    page = s3.list_objects_v2(Bucket=args.bucket, MaxKeys=5)
    out({"keys": [c["Key"] for c in page.get("Contents", [])]})


def cmd_list_buckets(s3, args):
    res = s3.list_buckets()
    out({
        "buckets": [b["Name"] for b in res.get("Buckets", [])],
        "dates": [b["CreationDate"].isoformat() for b in res.get("Buckets", [])],
        "owner": res.get("Owner", {}).get("ID"),
    })


def cmd_head_bucket(s3, args):
    s3.head_bucket(Bucket=args.bucket)
    out({"ok": True})


def cmd_object_api(s3, args):
    """Calls an object API by its boto3 name (get_object_tagging...)."""
    res = getattr(s3, args.api)(Bucket=args.bucket, Key=args.key)
    out({"ok": True, "fields": sorted(k for k in res if k != "ResponseMetadata")})


def cmd_presign(s3, args):
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": args.bucket, "Key": args.key}, ExpiresIn=args.expires
    )
    out({"url": url})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--key")
    p.add_argument("--prefix")
    p.add_argument("--delimiter")
    p.add_argument("--page-size", type=int, default=1000)
    p.add_argument("--out")
    p.add_argument("--chunk", type=int, default=1 << 20)
    p.add_argument("--pause-file")
    p.add_argument("--go-file")
    p.add_argument("--expires", type=int, default=3600)
    p.add_argument("--skew-minutes", type=int, default=0)
    p.add_argument("--unsigned", action="store_true")
    p.add_argument("--addressing", default="path", choices=["path", "virtual"])
    p.add_argument("--http-proxy")
    p.add_argument("--api")
    args = p.parse_args()
    s3 = client(args)
    commands = {
        "paginate": cmd_paginate,
        "download": cmd_download,
        "get": cmd_get,
        "list": cmd_list,
        "head-bucket": cmd_head_bucket,
        "list-buckets": cmd_list_buckets,
        "presign": cmd_presign,
        "object-api": cmd_object_api,
    }
    try:
        commands[args.command](s3, args)
    except ClientError as e:
        err = e.response.get("Error", {})
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        out({"error": err.get("Code"), "status": status})


if __name__ == "__main__":
    sys.exit(main())
