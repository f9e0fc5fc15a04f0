-- Re-submission detection (src/resubmission.rs) and shadow scoring (src/server/shadow.rs): keyed hashes of each checked picture, and the
-- signals reported with its verdict (JSON), so that GET by reference answers as the POST did.
-- image_tag is an HMAC of the bytes' SHA-256; print_band0..3 are HMACs of the perceptual print's
-- bands (candidates are found by equality on them); print_sealed is the print encrypted under
-- the server's secret. NULL for rows written before this, or by a service without a print key.
-- Keep in step with the other backend's file (the same columns; types in its spelling).
ALTER TABLE audit ADD COLUMN image_tag TEXT;
ALTER TABLE audit ADD COLUMN print_band0 TEXT;
ALTER TABLE audit ADD COLUMN print_band1 TEXT;
ALTER TABLE audit ADD COLUMN print_band2 TEXT;
ALTER TABLE audit ADD COLUMN print_band3 TEXT;
ALTER TABLE audit ADD COLUMN print_sealed TEXT;
ALTER TABLE audit ADD COLUMN signals TEXT;
CREATE INDEX audit_image_tag ON audit (image_tag);
CREATE INDEX audit_print_band0 ON audit (print_band0);
CREATE INDEX audit_print_band1 ON audit (print_band1);
CREATE INDEX audit_print_band2 ON audit (print_band2);
CREATE INDEX audit_print_band3 ON audit (print_band3);
-- Shadow scoring: the second model set's verdict on the same picture, written after the answer
-- (NULL until then, and for rows of a service without --shadow-model-set).
ALTER TABLE audit ADD COLUMN shadow_model TEXT;
ALTER TABLE audit ADD COLUMN shadow_p_real DOUBLE PRECISION;
ALTER TABLE audit ADD COLUMN shadow_live BOOLEAN;
ALTER TABLE audit ADD COLUMN shadow_reason TEXT;
