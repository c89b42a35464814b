from django import forms


class SignupForm(forms.Form):
    name = forms.CharField(label="Organisation name", max_length=100)
    slug = forms.CharField(
        label="Address", max_length=40, help_text="Lowercase letters, digits and hyphens: your-org.example.com"
    )
    email = forms.EmailField(label="Your email")
    password = forms.CharField(label="Password", widget=forms.PasswordInput, help_text="At least 10 characters.")
