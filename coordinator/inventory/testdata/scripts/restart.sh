#!/bin/sh
systemctl restart app
