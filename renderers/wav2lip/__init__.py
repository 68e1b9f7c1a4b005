"""Wav2Lip: for now only the avatar preparation that writes LiveTalking's wav2lip avatar
package (prepare.py). The renderer itself comes later; nothing here is registered in
renderers/registry.py yet."""
