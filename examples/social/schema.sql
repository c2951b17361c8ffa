-- The social app's posts, and the trigger that hands every change to Herald.
-- herald_publish() belongs to Herald's Postgres connector (it creates it on start): called in the
-- transaction that changes the row, it queues the publication in herald_outbox, so the change
-- reaches subscribers of feed:global once the transaction commits, and never if it rolls back,
-- whichever client made it (the app, psql, a migration).
CREATE TABLE IF NOT EXISTS posts (
    id         bigserial PRIMARY KEY,
    author     text NOT NULL,
    body       text NOT NULL CHECK (length(body) BETWEEN 1 AND 500),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION posts_to_herald() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM herald_publish('feed:global', 'post.deleted', jsonb_build_object('id', OLD.id));
        RETURN OLD;
    END IF;
    PERFORM herald_publish('feed:global',
        CASE TG_OP WHEN 'INSERT' THEN 'post.created' ELSE 'post.updated' END,
        to_jsonb(NEW));
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS posts_to_herald ON posts;
CREATE TRIGGER posts_to_herald AFTER INSERT OR UPDATE OR DELETE ON posts
    FOR EACH ROW EXECUTE FUNCTION posts_to_herald();
