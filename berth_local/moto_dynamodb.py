"""moto's DynamoDB made linearizable, as DynamoDB is: for `make run`, tests and benchmarks.

moto (5.x) serves requests on many threads without a lock, and runs TransactWriteItems item by
item after a deep copy of the whole table, restoring that copy when a condition fails: a failed
transaction then silently undoes every write other threads made in between, and each transaction
costs time proportional to the table. Real DynamoDB transactions are serializable. `serialized()`
runs every DynamoDB request under one lock and replaces TransactWriteItems with check-then-apply
under that lock (no copy). It patches the moto in this process: the `registry` fixture's
ThreadedMotoServer, `mock_aws`, or the server `make run` starts (berth_local/moto_server.py).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List

_LOCK = threading.RLock()


def _transact_write_items(self, transact_items: List[Dict[str, Any]]) -> None:
    from moto.dynamodb.exceptions import (MultipleTransactionsException,
                                          TooManyTransactionsException,
                                          TransactionCanceledException,
                                          TransactWriteSingleOpException)
    from moto.dynamodb.comparisons import get_filter_expression as filter_expression
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    with _LOCK:
        seen = set()
        plan = []
        errors = []
        for item in transact_items:
            if len(item) > 1:
                raise TransactWriteSingleOpException
            op_type, op = next(iter(item.items()))
            table = self.get_table(op["TableName"])
            if op_type == "Put":
                key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = op["Item"][table.range_key_attr]
            else:
                key = op["Key"]
            marker = (op["TableName"], str(dict(sorted(key.items()))))
            if marker in seen:
                raise MultipleTransactionsException()
            seen.add(marker)
            condition = op.get("ConditionExpression")
            ok = True
            if condition is not None:
                current = self.get_item(op["TableName"], key)
                expr = filter_expression(condition, op.get("ExpressionAttributeNames"),
                                         op.get("ExpressionAttributeValues"))
                ok = expr.expr(current)
            errors.append((None, None, None) if ok else
                          ("ConditionalCheckFailed", "The conditional request failed", None))
            plan.append((op_type, op, key))
        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)
        for op_type, op, key in plan:
            names = op.get("ExpressionAttributeNames")
            values = op.get("ExpressionAttributeValues")
            if op_type == "Put":
                self.put_item(op["TableName"], op["Item"], expression_attribute_names=names,
                              expression_attribute_values=values)
            elif op_type == "Delete":
                self.delete_item(op["TableName"], key, expression_attribute_names=names,
                                 expression_attribute_values=values)
            elif op_type == "Update":
                self.update_item(op["TableName"], key, update_expression=op["UpdateExpression"],
                                 expression_attribute_names=names,
                                 expression_attribute_values=values)


@contextmanager
def serialized() -> Iterator[None]:
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.responses import DynamoHandler
    original_call, original_tx = DynamoHandler.call_action, DynamoDBBackend.transact_write_items

    def call_action(self):
        with _LOCK:
            return original_call(self)
    DynamoHandler.call_action = call_action
    DynamoDBBackend.transact_write_items = _transact_write_items
    try:
        yield
    finally:
        DynamoHandler.call_action = original_call
        DynamoDBBackend.transact_write_items = original_tx
