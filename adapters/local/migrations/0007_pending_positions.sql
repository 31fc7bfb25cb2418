-- Pending deliveries are read back by the positions of their records, not by record id:
-- fill in the positions of those parked before, in the order of their record ids (records
-- that expired meanwhile are left out, as a retry by id would have left them out).
UPDATE pending_deliveries
SET doc = json_set(doc, '$.positions', (
    SELECT json_group_array(position) FROM (
        SELECT o.position AS position
        FROM json_each(pending_deliveries.doc, '$.record_ids') AS r
        JOIN output_records AS o ON o.id = r.value
        ORDER BY r.key
    )
))
WHERE json_type(doc, '$.positions') IS NULL;
