"""Writers for everything the toolkit hands to users: CSV, Parquet, GeoJSON, QGIS style, report.

Every writer is atomic: it writes a temporary file in the target folder, then ``os.replace``.
"""
