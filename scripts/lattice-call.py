#!/usr/bin/env python3
"""Call a VPC Lattice service the way a workload would.

Credentials come from a named AWS profile (for example one whose credential_process reads
from `spiffe-aws-agent run`'s socket), resolved by botocore exactly as any SDK resolves them;
the request is signed by botocore's own SigV4 signer for the service `vpc-lattice-svcs` with
an UNSIGNED-PAYLOAD body hash, as Lattice clients sign.

    AWS_CONFIG_FILE=... python3 scripts/lattice-call.py --profile orders --service billing \
        --endpoint http://127.0.0.1:PORT

Prints the HTTP status and body; exits 0 on 2xx, 3 on 403 (denied), 1 otherwise.
"""

import argparse
import sys
import urllib.error
import urllib.request

import botocore.auth
import botocore.awsrequest
import botocore.session


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True, help="AWS profile whose credentials to use")
    parser.add_argument("--service", required=True, help="Lattice service name, e.g. billing")
    parser.add_argument("--endpoint", required=True, help="base URL of the Lattice (double) endpoint")
    parser.add_argument("--path", default="/", help="path on the service (default /)")
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args()

    session = botocore.session.Session(profile=args.profile)
    credentials = session.get_credentials()
    if credentials is None:
        print(f"no credentials for profile {args.profile}", file=sys.stderr)
        return 1
    url = f"{args.endpoint.rstrip('/')}/{args.service}{args.path}"
    request = botocore.awsrequest.AWSRequest(method="GET", url=url, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    botocore.auth.SigV4Auth(credentials.get_frozen_credentials(), "vpc-lattice-svcs", args.region).add_auth(request)
    prepared = request.prepare()
    http_request = urllib.request.Request(prepared.url, method="GET", headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(http_request, timeout=10) as response:
            print(response.status, response.read().decode())
            return 0
    except urllib.error.HTTPError as error:
        print(error.code, error.read().decode())
        return 3 if error.code == 403 else 1


if __name__ == "__main__":
    sys.exit(main())
