-- Re-submission lookups in bounded time, whatever the number of earlier copies of a picture
-- (src/store/audit.rs, resubmission_sightings): each lookup reads one composite index range,
-- newest first, up to its limit. The single-column indexes made one query gather every row
-- sharing any tag, then sort them. Keep in step with the other backend's file.
DROP INDEX IF EXISTS audit_image_tag;
DROP INDEX IF EXISTS audit_print_band0;
DROP INDEX IF EXISTS audit_print_band1;
DROP INDEX IF EXISTS audit_print_band2;
DROP INDEX IF EXISTS audit_print_band3;
CREATE INDEX audit_image_tag_time ON audit (image_tag, created_at, key_id);
CREATE INDEX audit_print_band0_time ON audit (print_band0, created_at);
CREATE INDEX audit_print_band1_time ON audit (print_band1, created_at);
CREATE INDEX audit_print_band2_time ON audit (print_band2, created_at);
CREATE INDEX audit_print_band3_time ON audit (print_band3, created_at);
