"""Input and output: arrays from CSV/TSV, NPY, NPZ and stdin; labels, masks and
weights; block-wise streaming of big files; atomic writing of results.

Everything here raises :class:`smx_cli.errors.SmxError` (a ``ValueError``)
for bad input and never prints.
"""
from smx_cli.io.arrays import (NPY_MAGIC, ZIP_MAGIC, Loaded, load_npy, load_npz, read_array,
                               read_bytes)
from smx_cli.io.text import (DELIMITERS, content_lines, is_number, parse_text, sniff_delimiter,
                             split_fields)
from smx_cli.io.csv_engine import TextWriter, format_rows, iter_text_blocks, read_text
from smx_cli.io.write import (atomic_output, check_output_target, csv_field, csv_text,
                              is_temp_name, json_document, json_number_rows, npy_bytes,
                              output_format, output_identity, output_target, remove_stale_temps,
                              same_file, shortest_strings, write_chunks, write_npy, records_text,
                              records_json, structured_array, write_npz, npz_bytes)

__all__ = [
    "NPY_MAGIC", "ZIP_MAGIC", "Loaded", "load_npy", "load_npz", "read_array", "read_bytes",
    "DELIMITERS", "content_lines", "TextWriter", "format_rows", "read_text", "is_number",
    "iter_text_blocks", "parse_text", "sniff_delimiter", "split_fields", "atomic_output",
    "check_output_target", "csv_field", "csv_text",
    "json_document", "json_number_rows", "npy_bytes", "output_format", "remove_stale_temps",
    "same_file", "shortest_strings", "write_chunks", "write_npy", "is_temp_name",
    "output_identity", "output_target", "records_text", "records_json", "structured_array",
    "write_npz", "npz_bytes",
]
