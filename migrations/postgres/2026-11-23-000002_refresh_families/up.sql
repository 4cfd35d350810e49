-- A refresh token family (one per login) is revoked as a whole: rotations lock its row,
-- so a rotation racing a revocation either finishes first (and its new token is revoked
-- with the family) or sees the family revoked.
CREATE TABLE refresh_families (
    family_id TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    revoked_at BIGINT,
    created_at BIGINT NOT NULL
);
INSERT INTO refresh_families (family_id, user_id, revoked_at, created_at)
SELECT family_id, MIN(user_id), MAX(revoked_at), MIN(created_at)
FROM refresh_tokens GROUP BY family_id;
