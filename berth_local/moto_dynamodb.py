"""moto's DynamoDB made linearizable, as DynamoDB is: for `make run`, tests and benchmarks.

moto (5.x) serves requests on many threads without a lock, and runs TransactWriteItems item by
item after a deep copy of the whole table, restoring that copy when a condition fails: a failed
transaction then silently undoes every write other threads made in between, and each transaction
costs time proportional to the table. Real DynamoDB transactions are serializable. `serialized()`
runs every DynamoDB request under one lock and replaces TransactWriteItems with check-then-apply
under that lock (no copy).

moto also sorts every item of the table for each Query on the table's key, then keeps those of
the queried partition: a Query cost O(table size), and Berth queries on almost every request (a
GC test took 11 s late in `make test`, 4 s alone). `serialized()` hands such a Query only its
partition, which is what DynamoDB reads, and sorts a Scan's items by their keys' values rather
than by comparing moto's objects; the results, their order and paging are moto's own.

It patches the moto in this process: the `registry` fixture's ThreadedMotoServer, `mock_aws`, or
the server `make run` starts (berth_local/moto_server.py).
"""
from __future__ import annotations

import functools
import inspect
import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List

_LOCK = threading.RLock()
_PARTITION = threading.local()     # the items a Query on the table's key may read, while it runs


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


def _partition_reads(table_class) -> tuple:
    """Table.query and Table.all_items replacements: a Query on the table's own key sees
    `all_items()` as its partition's items only (moto filters and sorts them as before)."""
    original_query, original_all_items = table_class.query, table_class.all_items
    index_position = list(inspect.signature(original_query).parameters).index("index_name") - 2

    @functools.wraps(original_query)      # a nested serialized() finds index_name's position
    def query(self, hash_key, *args, **kwargs):
        index_name = kwargs.get("index_name", args[index_position] if len(args) > index_position
                                else None)
        if index_name is not None or self.range_key_attr is None or hash_key is None:
            return original_query(self, hash_key, *args, **kwargs)
        _PARTITION.only = (self, list(self.items.get(hash_key, {}).values()))
        try:
            return original_query(self, hash_key, *args, **kwargs)
        finally:
            _PARTITION.only = None

    @functools.wraps(original_all_items)
    def all_items(self):
        only = getattr(_PARTITION, "only", None)
        if only is not None and only[0] is self:
            return list(only[1])
        return _sorted_by_key([item for partition in self.items.values()
                               for item in (partition.values() if self.range_key_attr
                                            else [partition])])
    return query, all_items


def _sorted_by_key(items: list) -> list:
    """moto's order for all_items() (by hash key, then range key), with each key's value read
    once: moto's own sort compares DynamoType objects, reading their values at every comparison
    (most of a Scan's time on a table of 10,000 items)."""
    return sorted(items, key=lambda x: (x.hash_key.cast_value, x.range_key.cast_value)
                  if x.range_key else (x.hash_key.cast_value,))


@contextmanager
def serialized() -> Iterator[None]:
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table
    from moto.dynamodb.responses import DynamoHandler
    original_call, original_tx = DynamoHandler.call_action, DynamoDBBackend.transact_write_items
    original_query, original_all_items = Table.query, Table.all_items

    def call_action(self):
        with _LOCK:
            return original_call(self)
    DynamoHandler.call_action = call_action
    DynamoDBBackend.transact_write_items = _transact_write_items
    Table.query, Table.all_items = _partition_reads(Table)
    try:
        yield
    finally:
        DynamoHandler.call_action = original_call
        DynamoDBBackend.transact_write_items = original_tx
        Table.query, Table.all_items = original_query, original_all_items
