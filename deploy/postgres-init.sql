-- One database per service that owns data (docker compose runs this once, on an empty volume).
CREATE DATABASE herald_users;
CREATE DATABASE herald_templates;
CREATE DATABASE herald_dlq;
CREATE DATABASE herald_notifications;
