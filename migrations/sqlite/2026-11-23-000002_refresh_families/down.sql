DROP TABLE refresh_families;
