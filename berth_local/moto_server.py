"""moto's server with DynamoDB made linearizable (see moto_dynamodb.py): what `make run` starts.

usage: python -m berth_local.moto_server -H 127.0.0.1 -p PORT
"""
import sys

from berth_local.moto_dynamodb import serialized


def main() -> None:
    from moto.server import main as moto_main
    with serialized():
        moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
