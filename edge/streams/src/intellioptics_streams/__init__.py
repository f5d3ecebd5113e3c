"""The stream service: camera streams (RTSP, HTTP, files, USB) become edge image queries."""
