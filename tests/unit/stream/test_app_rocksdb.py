"""The users table's RocksDB memory is bounded by Settings, not Faust's defaults (2 GiB of block cache and
3 x 64 MiB of write buffers per partition, which let the worker's RSS grow with every user it read)."""

from __future__ import annotations

from stream.app import build_app
from stream.metrics import Metrics
from stream.settings import Settings


def test_the_users_table_store_gets_the_bounded_rocksdb_options(tmp_path):
    settings = Settings(data_dir=tmp_path, rocksdb_block_cache_mib=16, rocksdb_write_buffer_mib=4)
    app = build_app(settings, worker=None, metrics=Metrics())  # type: ignore[arg-type]
    store = app.tables["users"].data  # Faust's RocksDB store, built from the table's options
    options = store.rocksdb_options
    assert options.block_cache_size == 16 * 2**20
    assert options.write_buffer_size == 4 * 2**20
    assert options.max_write_buffer_number == 2
