"""``samsa-stream keys``: make a CurveZMQ key pair for a node or a console."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CommandError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="create a CurveZMQ key pair (node or console)",
                       description="Write NAME.key (public) and NAME.key_secret (secret) into DIR. The node's secret "
                                   "key goes to security.server_secret_key; each console's public key goes into "
                                   "the node's security.authorized_clients_dir; consoles get the node's public key "
                                   "as security.server_public_key and their own secret key as "
                                   "security.client_secret_key.")
    p.add_argument("dir", type=Path, help="folder for the key files (created, mode 0700)")
    p.add_argument("--name", default="node", help="file name stem (default: node)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import zmq.auth

    secret = args.dir / f"{args.name}.key_secret"
    if secret.exists():
        raise CommandError(f"{secret} exists already; choose another --name or folder")
    try:
        args.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        public_file, secret_file = zmq.auth.create_certificates(str(args.dir), args.name)
        Path(secret_file).chmod(0o600)
    except OSError as exc:
        raise CommandError(f"{args.dir}: cannot write the key pair ({exc.strerror or exc})") from exc
    print(f"public key: {public_file}\nsecret key: {secret_file}")
    return 0
